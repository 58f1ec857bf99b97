"""The transfer family's own parts (spaces/transfer.py): torchvision backbones and their pretrained
weights (`backbones`), the network of a trial (`model`), the predictor of a front point
(`predictor`), and the export of a trained backbone as a state dict another search starts from
(`python3 -m trainables.transfer.export`)."""
