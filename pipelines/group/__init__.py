"""Group-level analyses on participant outputs: probes and network identification."""
