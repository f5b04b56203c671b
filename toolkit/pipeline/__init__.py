"""plan -> run (pass cache, resume) -> evaluate -> select; estimates; the command workflows api.py calls."""
