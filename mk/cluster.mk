# make test-cluster: a single-node SLURM (Debian slurm-wlm + munge, installed and started as root) runs the
# demo study through `bsym submit --submit` and Nipype's SLURM plugin; see tests/cluster/run_cluster_test.sh.
# Every participant, the group job and the --nipype-plugin-file run must succeed when weights are available
# (BSYM_CLUSTER_WEIGHTS=BUNDLE, or ../shared/official); BSYM_CLUSTER_EXPECT=any|success overrides.

.PHONY: test-cluster stop-cluster

test-cluster: $(STAMP)
	BIN=$(BIN) bash tests/cluster/run_cluster_test.sh

stop-cluster:
	bash tests/cluster/stop_slurm.sh
