"""Pure TensorFlow detection ops: boxes, anchors, box coding, matching, NMS.

Nothing here holds Keras state or loops in Python over boxes or images.
"""

from detect.ops import anchors, box_coder, boxes, matcher, nms, nms_candidates

__all__ = ["anchors", "box_coder", "boxes", "matcher", "nms", "nms_candidates"]
