# Clinical and DL_Clinical models, cutoffs, Table 1, Table 2, figures (issue 5)
