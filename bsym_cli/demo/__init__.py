"""The simulated demo study (``bsym demo``) and the simulator behind it.

``bsym_cli.demo.simulate`` holds the volume-free simulator (connectome and Hopf-network BOLD) that
pretraining reuses; ``bsym_cli.demo.study.build_demo`` writes the whole study.
"""
