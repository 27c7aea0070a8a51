# Tuning split, Pre and PrePost deep-learning models, signatures, Grad-CAM (issue 4)
