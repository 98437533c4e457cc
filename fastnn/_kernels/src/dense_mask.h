/* The backward ReLU mask of a Linear layer over columns [start, stop) of an n x ld gradient:
   g = dy * (y > 0) (a product, as the reference, so NaN in dy stays NaN), and db[j] = the
   column sums of g in row order. Plain loops over restrict pointers, so the compiler
   vectorizes them; the in-place form (g written over dy) has its own loop, since dy and the
   output are then one array. The mask is isgreater(y, 0), a quiet comparison: GCC kept
   `y > 0`, which may trap on NaN, a branch per element and left the loops scalar (9% of an
   MLP epoch's time). */
#ifndef FASTNN_DENSE_MASK_H
#define FASTNN_DENSE_MASK_H

#include <math.h>
#include <stddef.h>

#define FASTNN_DEFINE_MASK(T, SUFFIX)                                                          \
    static void fastnn_mask_columns_##SUFFIX(const T *restrict dy, const T *restrict y,        \
                                             T *restrict work, T *restrict db, ptrdiff_t n,    \
                                             ptrdiff_t ld, ptrdiff_t start, ptrdiff_t stop)    \
    {                                                                                          \
        ptrdiff_t i, j;                                                                        \
        for (j = start; j < stop; j++)                                                         \
            db[j] = 0;                                                                         \
        for (i = 0; i < n; i++) {                                                              \
            const T *restrict d = dy + i * ld, *restrict yr = y + i * ld;                      \
            T *restrict w = work + i * ld;                                                     \
            for (j = start; j < stop; j++) {                                                   \
                T g = d[j] * (T)isgreater(yr[j], 0);                                           \
                w[j] = g;                                                                      \
                db[j] += g;                                                                    \
            }                                                                                  \
        }                                                                                      \
    }                                                                                          \
    static void fastnn_mask_columns_inplace_##SUFFIX(T *restrict g, const T *restrict y,       \
                                                     T *restrict db, ptrdiff_t n, ptrdiff_t ld, \
                                                     ptrdiff_t start, ptrdiff_t stop)          \
    {                                                                                          \
        ptrdiff_t i, j;                                                                        \
        for (j = start; j < stop; j++)                                                         \
            db[j] = 0;                                                                         \
        for (i = 0; i < n; i++) {                                                              \
            T *restrict gr = g + i * ld;                                                       \
            const T *restrict yr = y + i * ld;                                                 \
            for (j = start; j < stop; j++) {                                                   \
                gr[j] *= (T)isgreater(yr[j], 0);                                               \
                db[j] += gr[j];                                                                \
            }                                                                                  \
        }                                                                                      \
    }                                                                                          \
    static void fastnn_column_sums_##SUFFIX(const T *restrict g, T *restrict db, ptrdiff_t n,  \
                                            ptrdiff_t ld, ptrdiff_t start, ptrdiff_t stop)     \
    {                                                                                          \
        ptrdiff_t i, j;                                                                        \
        for (j = start; j < stop; j++)                                                         \
            db[j] = 0;                                                                         \
        for (i = 0; i < n; i++)                                                                \
            for (j = start; j < stop; j++)                                                     \
                db[j] += g[i * ld + j];                                                        \
    }

FASTNN_DEFINE_MASK(float, f32)
FASTNN_DEFINE_MASK(double, f64)

#endif
