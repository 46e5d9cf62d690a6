/* Test harness for csrc/modlist.h: JSON on stdin, the parsed module list on stdout. */
#include <stdio.h>
#include <stdlib.h>

#include "modlist.h"

int main(void)
{
    static char buf[1 << 20];
    size_t len = fread(buf, 1, sizeof(buf), stdin);
    struct modlist list;
    const char *error = NULL;
    size_t offset = 0, i;

    if (modlist_parse(buf, len, &list, &error, &offset) != 0) {
        printf("error at %lu: %s\n", (unsigned long)offset, error);
        return 1;
    }
    printf("%lu modules\n", (unsigned long)list.count);
    for (i = 0; i < list.count; i++)
        printf("%s\n", list.paths[i]);
    modlist_free(&list);
    return 0;
}
