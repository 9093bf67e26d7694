"""MORSE inside nnU-Net v2: ``nnUNetTrainerMORSE`` and its budget variants (``trainer``), the
network they train (``network``), the warm start from a plain nnU-Net checkpoint (``weights``)
and ``morse nnunet`` (``launch``).

nnU-Net finds the trainers through ``nnUNet_extTrainer`` set to ``launch.trainer_dir()``. Only
``network`` and ``launch`` import without nnunetv2 installed (``pip install "morse-seg[nnunet]"``).
"""
