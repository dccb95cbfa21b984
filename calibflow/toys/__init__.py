"""Toy generators: realistic calibration samples with known truth, for the demo, recipes and tests.

Takes a generator name, a size and a seed; gives ROOT files in each experiment's format. Open
``registry`` first (generators by name); ``jpsi`` is the demo's J/ψ tag-and-probe, ``lhcb``, ``belle2``,
``nanoaod``, ``egamma`` (Z→ee with radiation), ``classifier`` and ``tistos`` (LHCb TIS/TOS) the recipes' samples, ``sweighted`` the KDE
templates' sWeighted PID toy, ``common`` their shared pieces.
"""
