"""Testing namespace (like diffusers' ``testing_utils``): tiny random-weight builders of the real model classes for
tests and benches. Product code never imports from here except the ``tiny:`` placeholders."""
