"""Pin and clock constraint files of the boards the board tops target (package data)."""
