/* placeholder: being written */
#include <stdio.h>
int main(void)
{
    puts("bench_durable: not written yet");
    return 1;
}
