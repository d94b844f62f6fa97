"""The worker's side of the job protocol: events, instructions, capabilities and the coordinator."""
