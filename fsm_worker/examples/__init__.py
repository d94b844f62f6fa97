"""Small, tested examples of embedding fsm_worker (the README quotes them)."""
