/* NumPy's argmax of one row: the index of the first maximum, or of the first NaN where the row
   has one (NaN counts as the largest value). Shared by the training loop's running accuracy
   (loss.pyx count_correct) and predict's labels (dense.pyx chain_forward). classes >= 1. */
#ifndef FASTNN_ARGMAX_H
#define FASTNN_ARGMAX_H

#include <stddef.h>

#define FASTNN_DEFINE_ARGMAX(T, SUFFIX)                                                        \
    static inline ptrdiff_t fastnn_argmax_##SUFFIX(const T *row, ptrdiff_t classes)            \
    {                                                                                          \
        ptrdiff_t j, best = 0;                                                                 \
        T top = row[0];                                                                        \
        if (top != top)                                                                        \
            return 0;                                                                          \
        for (j = 1; j < classes; j++) {                                                        \
            if (row[j] != row[j])                                                              \
                return j;                                                                      \
            if (row[j] > top) {                                                                \
                top = row[j];                                                                  \
                best = j;                                                                      \
            }                                                                                  \
        }                                                                                      \
        return best;                                                                           \
    }

FASTNN_DEFINE_ARGMAX(float, f32)
FASTNN_DEFINE_ARGMAX(double, f64)

#endif
