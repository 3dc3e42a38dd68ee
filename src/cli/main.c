/* main.c — placeholder until the CLI lands. */
#include <stdio.h>

#include "crowdpack.h"

int main(void)
{
    printf("crowdpack %s\n", CP_VERSION_STRING);
    return 0;
}
