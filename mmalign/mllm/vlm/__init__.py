"""VLM preference training: batches of image rows, the recipe config, the method table and step."""
