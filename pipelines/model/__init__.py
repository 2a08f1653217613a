"""The model stage: robust scaling and running BrainSymphony on a participant's windows (main process)."""
