# Registration of PS/AP/PVP onto DP, mask checks, 3-slice 128x128 crops, QC (issue 3)
