"""Talking to ModelArts and IAM: signing, errors, the HTTP client."""
