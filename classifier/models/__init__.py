"""The models: the registry (model.name -> nn.Module), the layers and architectures no library ships
(blurpool, efficientnet_lite), the checkpoint, and a model's logits for a data set (inference).
"""
