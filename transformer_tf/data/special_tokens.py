"""The special tokens, in one place. Id 0 is padding everywhere in the package."""

PAD = "<pad>"
UNK = "<unk>"
BOS = "<s>"
EOS = "</s>"

PAD_ID = 0
UNK_ID = 1
BOS_ID = 2
EOS_ID = 3

SPECIAL_TOKENS = (PAD, UNK, BOS, EOS)
