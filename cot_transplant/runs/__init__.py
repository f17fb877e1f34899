"""What a run leaves behind, read and written: its directory (`rundir`), its metrics (`metrics`), its summary and
the validation choice (`summary`), and its rows as its config names them (`records`).

Below `train/` (which writes runs) and `analysis/` (which reads them); imports neither.
"""
