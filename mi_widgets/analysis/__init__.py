"""Analysis: pure tensor functions (head scores, thumbnails, ...), device-agnostic."""

from .attention import THUMBNAIL_SIZE, check_patterns, pattern_thumbnails
from .composition import COMPOSITION_MODES, composition_baseline, composition_scores
from .head_scores import HEAD_TYPES, RunningHeadScores, check_detection_pattern, detection_patterns, head_scores

__all__ = [
    "COMPOSITION_MODES",
    "composition_baseline",
    "composition_scores",
    "HEAD_TYPES",
    "THUMBNAIL_SIZE",
    "RunningHeadScores",
    "check_detection_pattern",
    "check_patterns",
    "detection_patterns",
    "head_scores",
    "pattern_thumbnails",
]
