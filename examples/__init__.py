"""Worked extension examples (docs/extending.md); none edits OpenTrail's code."""
