"""MTP draft acceptance: the only package of ckpt-audit that runs a model (torch, transformers).

Import it lazily: the rest of ckpt-audit never needs torch.
"""
