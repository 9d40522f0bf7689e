"""Objects from dense network outputs: instance grouping, panoptic merging, their file formats."""
