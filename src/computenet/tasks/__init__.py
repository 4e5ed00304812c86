"""The task domain shared by the node and the federation: lifecycle, transitions, clock."""
