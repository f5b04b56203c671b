"""What a run writes: report (+ sections, plots), bundle (+ verify, signing), staging, history, nightly."""
