// SPDX-License-Identifier: GPL-2.0
/* Exports a symbol that dtkdepuser needs: a BUILD_DEPENDS pair for dtk's tests. */
#include <linux/module.h>

int dtkdep_answer(void)
{
	return 42;
}
EXPORT_SYMBOL_GPL(dtkdep_answer);

MODULE_LICENSE("GPL");
MODULE_VERSION("1.0");
