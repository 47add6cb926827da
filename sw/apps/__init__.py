"""The applications behind the command line (``cdmqta demo``, ``bench``, ``finetune``) and the diffusion study;
they sit on top of every other layer and nothing imports them."""
