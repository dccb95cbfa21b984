"""Numba kernels, each beside the plain-numpy reference its tests compare it with; numpy arrays in and out.

Open ``binindex`` first (it locates rows in a bin scheme: every stage uses it); ``histogram`` fills pass/fail
mass histograms, ``pairing`` and ``matching`` build tag-and-probe pairs and match objects, ``fused`` and
``fused_pairs`` compile a config's cuts, pairs and columns into one loop, ``jagged`` turns jagged baskets' byte
offsets into entry offsets, ``template`` evaluates simulation templates ⊗ a Gaussian, ``warm`` loads kernels
before workers fork, ``cache`` is the one folder of their machine code. They import no stage package.
"""
