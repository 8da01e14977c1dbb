"""Spiking burst ensembles of Payeur et al. (Nature Neuroscience 2021): the stochastic-burst
neuron, event/burst detection, synapses, burst-dependent plasticity, the XOR network and
the plasticity protocols of Fig. 2, as pure step functions over (replicas, neurons) state."""
