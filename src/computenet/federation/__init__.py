"""Federation of nodes: trust, enrolment, resolution, sync and task forwarding (1+M+N)."""
