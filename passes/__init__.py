"""Graph -> Graph passes (canonicalization, folding, compression), composed by the pass manager."""
