"""The lab's Pulumi components (type tokens l2dsr:lab:Name) and the dynamic providers beneath them."""
