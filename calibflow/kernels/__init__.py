"""Numba kernels, each beside the plain-numpy reference its tests compare it with.

Take numpy arrays; give arrays. Open ``binindex`` first (the scheme walk every stage uses): it locates
rows in a bin scheme and fills per-bin counts; ``histogram`` fills pass/fail mass histograms, ``pairing``
and ``matching`` build tag-and-probe pairs and match objects, ``fused`` compiles a config's cuts and
columns into one loop, ``fused_pairs`` the tag-and-probe pairing of jagged collections with its cuts and
columns, ``jagged`` turns the byte offsets of jagged baskets into entry offsets, ``template`` evaluates
simulation templates ⊗ a Gaussian for the fits, ``warm`` loads kernels before workers fork, ``cache`` is the
one folder of their machine code. They import no stage package.
"""
