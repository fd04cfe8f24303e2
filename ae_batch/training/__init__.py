"""Training: protocols' budgets and learning-rate rules, stacked optimisation, resumable checkpoints.

Importing this package imports nothing heavy; modules that need torch or Lightning import them.
"""
