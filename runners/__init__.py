"""Execution layer: the in-process PEFT runner and the export backends."""
