"""COCO reading and checking, image decoding, box-aware transforms, tf.data pipeline."""
