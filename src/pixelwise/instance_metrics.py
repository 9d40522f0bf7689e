"""Instance and panoptic scores: mask AP through COCOeval, panoptic quality."""
