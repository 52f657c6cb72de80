"""What a saga process tells about itself: its log lines, its metrics, and credentials masked in both."""
