"""The test suite; its folders mirror the package (``tests/<package path>/test_<module>.py``), shared helpers in
:mod:`tests.helpers`."""
