"""Training: distributed helpers, collators, the trainer loop shared by both stages."""
