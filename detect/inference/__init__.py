"""Running a trained detector over datasets and imagery."""
