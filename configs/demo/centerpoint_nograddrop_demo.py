# The demo detector without GradDrop (plain sum of the task gradients): the benchmark's baseline.
_base_ = ["./centerpoint_graddrop_demo.py"]
model = dict(head=dict(graddrop=dict(mode="off")))
