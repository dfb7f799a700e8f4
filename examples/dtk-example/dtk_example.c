// SPDX-License-Identifier: GPL-2.0
/*
 * dtk_example: a small real out-of-tree driver used by dtk's demo and tests.
 *
 * It registers a misc character device, /dev/dtk_example. Reading it returns
 * the `greeting` module parameter followed by the number of reads so far, so
 * a test can prove the module is live and that its parameter was applied.
 */
#include <linux/atomic.h>
#include <linux/fs.h>
#include <linux/kernel.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/uaccess.h>

static char *greeting = "hello from dtk";
module_param(greeting, charp, 0444);
MODULE_PARM_DESC(greeting, "Text returned by reads of /dev/dtk_example");

static atomic_t reads = ATOMIC_INIT(0);

static ssize_t dtk_example_read(struct file *file, char __user *buf, size_t len, loff_t *ppos)
{
	char text[192];
	int n = scnprintf(text, sizeof(text), "%s (read %d)\n", greeting,
			  atomic_inc_return(&reads));

	return simple_read_from_buffer(buf, len, ppos, text, n);
}

static const struct file_operations dtk_example_fops = {
	.owner = THIS_MODULE,
	.read = dtk_example_read,
	.llseek = noop_llseek,
};

static struct miscdevice dtk_example_dev = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "dtk_example",
	.fops = &dtk_example_fops,
	.mode = 0444,
};

static int __init dtk_example_init(void)
{
	int err = misc_register(&dtk_example_dev);

	if (err)
		return err;
	pr_info("dtk_example: loaded, greeting=\"%s\"\n", greeting);
	return 0;
}

static void __exit dtk_example_exit(void)
{
	misc_deregister(&dtk_example_dev);
	pr_info("dtk_example: unloaded after %d reads\n", atomic_read(&reads));
}

module_init(dtk_example_init);
module_exit(dtk_example_exit);

MODULE_LICENSE("GPL");
MODULE_AUTHOR("dtk authors");
MODULE_DESCRIPTION("dtk example driver: a misc character device with a parameter");
MODULE_VERSION("1.0");
