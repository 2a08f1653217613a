"""The command lines: ``bsym-app`` (the BIDS-App), ``bsym`` (the tools), their options and configuration."""
