"""The folder nnU-Net's ``nnUNet_extTrainer`` points at (``morse nnunet trainer-dir``)."""
