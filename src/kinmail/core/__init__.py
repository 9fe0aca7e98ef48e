"""Errors, logging with connection ids, atomic file writes and ids shared by every part."""
