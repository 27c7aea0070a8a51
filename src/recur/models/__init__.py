"""The models: the Pre and PrePost networks, their datasets and transforms, training,
model selection and signatures, Grad-CAM, and the tabular Clinical and DL_Clinical models."""
