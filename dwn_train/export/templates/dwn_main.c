/* dwn_main.c: reads samples (one line of DWN_NUM_FEATURES integers each) from stdin and prints,
 * per sample, the per-sample class, the batch class and the scores. For verification only. */
#include <stdio.h>
#include <stdlib.h>
#include "dwn_model.h"

#define MAX_SAMPLES 100000
static dwn_input_t xs[MAX_SAMPLES][DWN_NUM_FEATURES];
static int32_t batch[MAX_SAMPLES];

int main(void)
{
    long count = 0, s;
    int f, c;
    long value;
    while (count < MAX_SAMPLES) {
        for (f = 0; f < DWN_NUM_FEATURES; f++) {
            if (scanf("%ld", &value) != 1) {
                goto done;
            }
            xs[count][f] = (dwn_input_t)value;
        }
        count++;
    }
done:
    dwn_predict_batch(&xs[0][0], count, batch);
    for (s = 0; s < count; s++) {
        int32_t scores[DWN_NUM_CLASSES];
        int cls = dwn_predict(xs[s], scores);
        printf("%d %d", cls, (int)batch[s]);
        for (c = 0; c < DWN_NUM_CLASSES; c++) {
            printf(" %d", (int)scores[c]);
        }
        printf("\n");
    }
    return 0;
}
