"""Running the analysis levels: the participant graph, the model stage, the group level and reports."""
