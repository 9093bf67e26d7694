"""Collection rules for the whole repository."""

import importlib.util

# morse.nnunet's trainer modules import nnU-Net, an optional extra (pip install -e ".[nnunet]");
# without it their doctests are not collected (tests/test_nnunet*.py skip on their own)
collect_ignore_glob = (
    [] if importlib.util.find_spec("nnunetv2") else ["morse/nnunet/trainer.py",
                                                     "morse/nnunet/weights.py", "morse/nnunet/ext"]
)
